package org.springframework.beans;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public abstract class BeansException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public BeansException(String msg) {
        super(msg);
    }
}
