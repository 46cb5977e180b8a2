/* compute: a finite job. Counts the primes below $LIMIT (default 100000), prints the result and
   exits 0. Written in C to show the clang + wasi-libc toolchain. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const char *env = getenv("LIMIT");
    long limit = env ? atol(env) : 100000;
    long count = 0;
    for (long n = 2; n < limit; n++) {
        int prime = 1;
        for (long d = 2; d * d <= n; d++) {
            if (n % d == 0) { prime = 0; break; }
        }
        count += prime;
    }
    printf("primes below %ld: %ld\n", limit, count);
    return 0;
}
