package org.springframework.core.env;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public interface Environment extends PropertyResolver {}
