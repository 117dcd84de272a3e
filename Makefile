# Everyday targets; CI runs .ci/run.
.PHONY: help export clean test test-triton notebooks readme docs bench
help:
	@echo "make export | clean | test | test-triton | notebooks | readme | docs | bench"
export:       ## notebooks -> memnb/
	nbdev_export
clean:        ## strip notebook metadata
	nbdev_clean
test:         ## the README's test command
	nbdev_test && pytest
test-triton:  ## Triton kernels on the CPU through the interpreter
	TRITON_INTERPRET=1 nbdev_test --flags triton && TRITON_INTERPRET=1 pytest -m triton
notebooks:    ## every notebook headless in a Jupyter kernel, as a reader runs it (slow cells skipped)
	python tools/run_notebooks.py
readme:       ## README.md from nbs/index.ipynb
	python tools/readme.py
docs:         ## the site with Quarto; without it, one line saying so, then the nbconvert preview in _site/, checked in Chromium
	@if command -v quarto >/dev/null; then python tools/proc_docs.py --render; else \
	  echo "make docs: the docs site needs Quarto (https://quarto.org/docs/get-started/); building the nbconvert preview in _site/ instead"; \
	  python tools/proc_docs.py && python tools/render_site.py && MEMNB_DOCS_TEST=1 pytest -m docs tests/test_docs_site.py; fi
bench:
	memnb bench scan --json bench-results/scan.json
