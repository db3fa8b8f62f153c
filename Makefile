# The two commands of the README. Both set up what they need on a fresh machine (scripts/bootstrap.sh).
.PHONY: demo test

demo:
	scripts/bootstrap.sh demo
	scripts/demo.sh

test:
	scripts/bootstrap.sh test
	.venv/bin/python -m pytest -n 2 --dist loadfile
