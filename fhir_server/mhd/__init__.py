"""IHE MHD on the FHIR face: ITI-65 Provide Document Bundle checks (ITI-66/67/68 are plain
FHIR search and read, served by the REST face with the search parameters of profiles/)."""
