package com.netflix.conductor.core.utils;

import com.fasterxml.jackson.databind.ObjectMapper;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. replace()
// resolves ${...} expressions upstream (environment and system parameters); here it only turns
// the escape $${ into ${, as upstream does last.
public class ParametersUtils {
    public ParametersUtils(ObjectMapper objectMapper) {}

    public Object replace(String paramString) {
        return paramString.replace("$${", "${");
    }
}
