"""Pure code every other package builds on: it imports nothing of the project and is
testable without any service."""
