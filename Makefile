# Conventional entry points; each delegates to bootstrap.py, which sets up .venv itself.
.PHONY: setup test study test-slow lab
setup:
	python3 bootstrap.py setup
test:
	python3 bootstrap.py test
test-slow:
	python3 bootstrap.py test --runslow
study:
	python3 bootstrap.py study
lab:
	python3 bootstrap.py lab
