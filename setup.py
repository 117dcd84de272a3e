"""Packaging for memnb: every field is read from `settings.ini` (nbdev's single source of metadata)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

assert tuple(map(int, setuptools.__version__.split('.')[:2])) >= (36, 2), 'setuptools>=36.2 is required'
here = Path(__file__).parent
config = ConfigParser(delimiters=['='])
config.read(here/'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

def cfg_list(key):
    "One requirement per line in settings.ini (so environment markers may hold spaces)."
    return [line.strip() for line in cfg.get(key, '').splitlines() if line.strip()]

licenses = {'apache2': 'Apache-2.0'}  # SPDX expressions
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()
min_python = cfg['min_python']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(here/'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    license=licenses[cfg['license']],
    url=cfg['git_url'],
    keywords=cfg['keywords'].split(),
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    packages=setuptools.find_packages(include=['memnb', 'memnb.*']),
    include_package_data=True,
    python_requires='>=' + min_python,
    install_requires=cfg_list('requirements'),
    extras_require={'dev': cfg_list('dev_requirements'), 'bench': cfg_list('bench_requirements'),
                    'triton': cfg_list('triton_requirements')},
    entry_points={'console_scripts': cfg['console_scripts'].split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
