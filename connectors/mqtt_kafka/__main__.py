"""``python -m connectors.mqtt_kafka``: run the MQTT -> Kafka bridge."""

import sys

from connectors.mqtt_kafka.cli import main

sys.exit(main())
