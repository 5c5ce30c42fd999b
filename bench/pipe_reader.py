"""The streaming floor's reader: counts the lines arriving on stdin, prints the count."""

import os
import sys


def main() -> None:
    fd = sys.stdin.fileno()
    lines = 0
    while chunk := os.read(fd, 65536):
        lines += chunk.count(b"\n")
    print(lines)


if __name__ == "__main__":
    main()
