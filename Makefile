# `make test` and `make demo` build .venv themselves (only when it is missing or the
# requirements changed), so they work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The Paddle 2.6 route in its own environment: requirements.txt with the pins that
# requirements-paddle26.txt names replaced by its own.
VENV26 := .venv-paddle26
PY26 := $(VENV26)/bin/python
STAMP26 := $(VENV26)/.installed

.PHONY: test test-fast test-browser test-paddle26 demo venv venv-paddle26 clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt tools/load_zlib_first.pth
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	cp tools/load_zlib_first.pth "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Everything but the multi-process, fault-drill, learnability and launcher runs: for editing.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The report page in a real browser: Debian's chromium (apt-get, as root) driven by Playwright's
# Python package (requirements-browser.txt) through executable_path. Screenshots and the measured
# draw times go to output/browser/.
CHROMIUM ?= /usr/bin/chromium
BROWSER_STAMP := $(VENV)/.installed-browser

$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium

$(BROWSER_STAMP): requirements-browser.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-browser.txt
	touch $(BROWSER_STAMP)

test-browser: $(STAMP) $(BROWSER_STAMP) $(CHROMIUM)
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -rA -m browser tests/test_report_browser.py
	@echo "screenshots and timings: output/browser/"

venv-paddle26: $(STAMP26)

$(STAMP26): requirements.txt requirements-paddle26.txt requirements-nodeps.txt tools/load_zlib_first.pth
	test -x $(PY26) || $(PYTHON) -m venv $(VENV26)
	$(PY26) -m pip install --quiet --upgrade pip
	awk -F'==' 'NR == FNR { if ($$0 !~ /^ *(#|$$)/) own[tolower($$1)] = 1; next } \
	    !(tolower($$1) in own)' requirements-paddle26.txt requirements.txt > $(VENV26)/requirements-shared.txt
	$(PY26) -m pip install --quiet -r requirements-paddle26.txt -r $(VENV26)/requirements-shared.txt
	$(PY26) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	cp tools/load_zlib_first.pth "$$($(PY26) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	touch $(STAMP26)

test-paddle26: $(STAMP26)
	$(PY26) -m pytest -q

demo: $(STAMP)
	$(PY) demo/run_demo.py

clean-demo:
	rm -rf demo_output demo_work
