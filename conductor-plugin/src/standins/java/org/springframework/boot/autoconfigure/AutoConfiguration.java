package org.springframework.boot.autoconfigure;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Inherited;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

// Compile-only stand-in (never packaged); upstream: see conductor-plugin/STANDINS.md. (Upstream it
// is meta-annotated with @Configuration(proxyBeanMethods = false) and more; the plugin uses none of it.)
@Target(ElementType.TYPE)
@Retention(RetentionPolicy.RUNTIME)
@Documented
@Inherited
public @interface AutoConfiguration {
    String value() default "";
}
