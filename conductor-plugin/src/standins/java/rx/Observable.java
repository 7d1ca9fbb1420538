package rx;

// Compile-only stand-in (never packaged): RxJava 1's rx.Observable, only as a type here.
public class Observable<T> {
    protected Observable() {}
}
