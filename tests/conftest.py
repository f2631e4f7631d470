import sys
from pathlib import Path

# The helpers of tests/ (oracle, faulty adapters) are imported by name.
sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["pytester"]
