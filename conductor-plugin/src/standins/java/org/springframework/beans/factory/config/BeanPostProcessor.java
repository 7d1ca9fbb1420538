package org.springframework.beans.factory.config;

import org.springframework.beans.BeansException;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md.
public interface BeanPostProcessor {
    default Object postProcessBeforeInitialization(Object bean, String beanName) throws BeansException {
        return bean;
    }

    default Object postProcessAfterInitialization(Object bean, String beanName) throws BeansException {
        return bean;
    }
}
