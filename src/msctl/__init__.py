"""msctl: build, prove and tear down the Day 21 AWS microservices lab."""

__version__ = "0.1.0"
