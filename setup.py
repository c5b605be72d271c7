"""What pyproject.toml cannot say: the wheel's packages are found, never listed (a new backbone family is
in the wheel without an edit here), plus the shipped demo model mapped in as ``illava.lab.models``."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["illava", "illava.*"]), "illava.lab.models"])
