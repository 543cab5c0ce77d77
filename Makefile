# The README's two commands: `make demo` (the main job) and `make test`. Both set up what they need.
.PHONY: setup demo test bench sandbox-up sandbox-down

setup:
	@bash scripts/setup.sh

demo: setup
	@PYTHONPATH=. .venv/bin/python scripts/demo.py

test: setup
	@.venv/bin/pytest -q -n 2 --dist loadfile

# The figures of docs/design.md "Performance" against the sandbox (under 10 minutes on 2 cores); see benchmarks/README.md.
bench: setup
	@.venv/bin/python -m benchmarks.run

sandbox-up: setup
	@.venv/bin/python -m sandbox up

sandbox-down:
	@.venv/bin/python -m sandbox down
