# The two commands the README names: `make demo` and `make test`. Both set up what they need.
.PHONY: bootstrap demo test lint unit

bootstrap:
	bash scripts/bootstrap.sh

# The main job on a self-contained lab: build it, take snapshot sets under a write load, list them,
# and bring a deleted row back in a flashback instance.
demo: bootstrap
	bash scripts/demo.sh

lint: bootstrap
	.venv/bin/ruff check zsnap tests bench
	.venv/bin/mypy

unit: bootstrap
	.venv/bin/pytest -q tests/unit

test: lint
	.venv/bin/pytest -q -ra tests
