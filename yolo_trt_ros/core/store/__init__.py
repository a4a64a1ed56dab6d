"""Files loaded as code or compiled artefacts: the engine cache and the one trust policy
every such file passes."""
