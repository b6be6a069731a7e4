"""Zero-loss MQTT -> Kafka bridge (ordered manual acks after acks=all writes); see bridge.py."""
