# Cascade's two commands. Both install what is missing on a fresh Debian
# machine (scripts/deps.sh), start private services on loopback
# (scripts/stack.sh) and stop them when done.

.PHONY: run test deps

## make run: the local stack plus `cascade serve` (all roles) in the foreground.
run: deps
	@scripts/stack.sh run -- scripts/run.sh

## make test: everything CI checks (format, lints, unit and integration tests).
test: deps
	@scripts/stack.sh test -- scripts/test.sh

deps:
	@scripts/deps.sh
