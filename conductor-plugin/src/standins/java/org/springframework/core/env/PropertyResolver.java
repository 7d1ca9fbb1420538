package org.springframework.core.env;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. Only the
// method the plugin calls.
public interface PropertyResolver {
    String getProperty(String key, String defaultValue);
}
