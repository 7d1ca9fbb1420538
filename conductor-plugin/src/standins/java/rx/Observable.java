package rx;

// Compile-only stand-in (never packaged): RxJava 1.2.2's rx.Observable, only as a type here; its
// one constructor as upstream (protected, taking an OnSubscribe), so code that compiles against
// this compiles against the real one.
public class Observable<T> {
    public interface OnSubscribe<T> {}

    protected Observable(OnSubscribe<T> f) {}
}
