# Everyday targets; CI runs .ci/run.
.PHONY: help export clean test test-triton readme docs bench
help:
	@echo "make export | clean | test | test-triton | readme | docs | bench"
export:       ## notebooks -> memnb/
	nbdev_export
clean:        ## strip notebook metadata
	nbdev_clean
test:         ## the README's test command
	nbdev_test && pytest
test-triton:  ## Triton kernels on the CPU through the interpreter
	TRITON_INTERPRET=1 nbdev_test --flags triton && TRITON_INTERPRET=1 pytest -m triton
readme:       ## README.md from nbs/index.ipynb
	python tools/readme.py
docs:         ## the full site wherever Quarto is installed; else the HTML rendering checked in Chromium
	@if command -v quarto >/dev/null; then nbdev_docs; else python tools/proc_docs.py && python tools/render_site.py && MEMNB_DOCS_TEST=1 pytest -m docs tests/test_docs_site.py; fi
bench:
	memnb bench scan --json bench-results/scan.json
