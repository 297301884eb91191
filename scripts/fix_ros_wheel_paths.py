"""Rewrite the build-machine paths baked into the ROS 2 wheels' CMake files (idempotent).

The ros-kilted-* wheels were built under /opt/python/cp311-cp311; their exported CMake files still name that
interpreter's include directory and numpy's. CMake refuses targets whose include paths do not exist, so every
rosidl interface build fails unless they point at this environment's own paths.
"""

from __future__ import annotations

import pathlib
import re
import sys
import sysconfig

import numpy

BUILD_PYTHON_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+m?/include/python3\.\d+")
BUILD_NUMPY_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+m?/lib/python3\.\d+/site-packages/numpy/_core/include")


def main(prefix: str) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in pathlib.Path(prefix, "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if "/opt/python/" not in text:
            continue
        new = BUILD_NUMPY_INCLUDE.sub(numpy_include, text)
        new = BUILD_PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    print(f"[setup] rewrote build-machine paths in {changed} CMake files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".venv"))
