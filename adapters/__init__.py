"""Broker adapters: implementations of the engine's broker port (engine/broker.py)."""
