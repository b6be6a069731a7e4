"""A Beam user-state cell as the harness hands it to a DoFn, for driving DoFns by hand in tests."""

from __future__ import annotations


class FakeState:
    """ReadModifyWrite (read/write/clear) and, as a bag, add: the bag's value is a list of entries."""

    def __init__(self, value=None):
        self.value = value

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None

    def add(self, item):
        self.value = [*(self.value or []), item]
