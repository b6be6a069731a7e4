"""``python -m iot_data_generator``: the same options and behaviour as ``sensorlake generate``."""

import sys

from iot_data_generator.cli import main

if __name__ == "__main__":
    sys.exit(main())
