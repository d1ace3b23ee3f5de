"""Statistical models and the sample-bank simulator: pure logic, no file I/O."""
