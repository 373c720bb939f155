"""The most common word of a counts file ("COUNT WORD" lines, most frequent first)."""

import sys

with open(sys.argv[1], encoding="utf-8") as counts:
    first = counts.readline().split()
print(first[1] if first else "", end="")
