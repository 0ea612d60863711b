# Every target installs what it needs first, so each works on a fresh clone with only Python and pip.
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTHON ?= python3

.PHONY: help
help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: .uv
.uv: ## Install uv with pip when it is missing
	@command -v $(UV) >/dev/null 2>&1 || $(PYTHON) -m pip install --user --quiet 'uv>=0.9' || $(PYTHON) -m pip install --quiet 'uv>=0.9'

.PHONY: install
install: .uv ## Create .venv with the library and its development tools, exactly as uv.lock pins them
	@$(UV) sync --frozen --all-groups --all-extras

.PHONY: demo
demo: install ## Run the quickstart demo offline on scripted models (no API key)
	@$(UV) run --frozen python examples/quickstart.py

.PHONY: demo-web
demo-web: install ## Serve the live dashboard on 127.0.0.1 (PORT=8000) with scripted tasks to watch and steer
	@$(UV) run --frozen python examples/web_dashboard.py

.PHONY: system-deps
system-deps: ## Install the system programs some tests drive for real: Chromium (dashboard) and redis-server
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing with apt-get"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing:$$missing (install them, e.g. with apt-get) for the browser and Redis tests"; fi; \
	fi

.PHONY: test
test: install system-deps ## Run the test suite with branch coverage of src/
	@$(UV) run --frozen coverage erase
	@$(UV) run --frozen coverage run -m pytest
	@$(UV) run --frozen coverage combine -q
	@$(UV) run --frozen coverage report

.PHONY: lint
lint: install ## ruff check, ruff format --check, pyright (strict on src/)
	@$(UV) run --frozen ruff check src tests examples bench evals
	@$(UV) run --frozen ruff format --check src tests examples bench evals
	@$(UV) run --frozen pyright

.PHONY: format
format: install ## Apply ruff's fixes and formatting
	@$(UV) run --frozen ruff check --fix src tests examples bench evals
	@$(UV) run --frozen ruff format src tests examples bench evals

.PHONY: docs
docs: install ## Build the documentation site strictly into site/
	@NO_MKDOCS_2_WARNING=1 $(UV) run --frozen mkdocs build --strict

.PHONY: docs-serve
docs-serve: install ## Serve the documentation site with live reload
	@$(UV) run --frozen mkdocs serve

.PHONY: bench
bench: install ## Benchmarks against a plain Pydantic AI floor and two other libraries (8 to 9 minutes; see bench/README.md)
	@$(UV) run --frozen python bench/run.py --alternatives

.PHONY: bench-fast
bench-fast: install ## Benchmarks against the floor only (about 4 minutes)
	@$(UV) run --frozen python bench/run.py

.PHONY: bench-larger
bench-larger: install ## Fan-out to 100,000 tasks point by point, and a 100,000-task churn (about 50 minutes)
	@$(UV) run --frozen python bench/larger.py

.PHONY: bench-redis
bench-redis: install system-deps ## Across processes on Redis: cancel latency from another process, worker round trip and throughput
	@$(UV) run --frozen python bench/redis_bench.py

.PHONY: chaos
chaos: install system-deps ## Redis killed and restarted (with and without data), a worker and a manager killed, during 400 tasks (PASS/FAIL, about a minute)
	@$(UV) run --frozen python -m tests.chaos --tasks 400

.PHONY: eval
eval: install ## Delegation evals: the parent model SUBAGENTS_EVAL_MODEL (default: scripted stand-in) on 14 cases (docs/evals.md)
	@$(UV) run --frozen python -m evals $(EVAL_ARGS)

.PHONY: soak
soak: install ## Soak the task manager: 10,000 tasks with random cancels, questions and failures (PASS/FAIL)
	@$(UV) run --frozen python bench/soak.py
