"""PowerFlow host controller: predictive power management for racks of DC-DC converters."""

__version__ = "0.1.0"
