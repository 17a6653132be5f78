"""FHIR R4 and IHE XDS.b server for the French shared health record (DMP)."""

__version__ = "0.1.0"
