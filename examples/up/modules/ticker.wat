;; ticker: greets, then prints "tick N" once a second, forever.
;;
;; A WASI preview 1 command written directly in the WebAssembly text format, so `skiff up` can
;; ship it without a wasm32 toolchain (it compiles the text when it starts). The same program
;; in Rust is examples/wasm/hello.rs.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; Memory map: 0 iovecs, 64 one clock subscription, 128 its event, 192 counters,
  ;; 256 text, 400..544 the line being printed.
  (data (i32.const 256) "Hello from a Wasm container!\n")
  (data (i32.const 320) "tick ")

  ;; Writes the len bytes at ptr to stdout in one buffer (fd_write may write only the first).
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 192))))

  ;; Composes prefix, n in decimal and a newline so that it ends at 544; returns its start.
  (func $line (param $prefix i32) (param $prefix_len i32) (param $n i64) (result i32)
    (local $p i32)
    (local.set $p (i32.const 543))
    (i32.store8 (local.get $p) (i32.const 10))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $n) (i64.const 0))))
    (local.set $p (i32.sub (local.get $p) (local.get $prefix_len)))
    (memory.copy (local.get $p) (local.get $prefix) (local.get $prefix_len))
    (local.get $p))

  ;; Sleeps for ns nanoseconds: one relative timeout on the monotonic clock.
  (func $sleep (param $ns i64)
    (i32.store8 (i32.const 72) (i32.const 0))     ;; tag: clock
    (i32.store (i32.const 80) (i32.const 1))      ;; clock id: monotonic
    (i64.store (i32.const 88) (local.get $ns))    ;; timeout
    (i64.store (i32.const 96) (i64.const 0))      ;; precision
    (i32.store16 (i32.const 104) (i32.const 0))   ;; flags: relative
    (drop (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 196))))

  (func (export "_start")
    (local $tick i64)
    (local $start i32)
    (call $print (i32.const 256) (i32.const 29))
    (loop $forever
      (call $sleep (i64.const 1000000000))
      (local.set $tick (i64.add (local.get $tick) (i64.const 1)))
      (local.set $start (call $line (i32.const 320) (i32.const 5) (local.get $tick)))
      (call $print (local.get $start) (i32.sub (i32.const 544) (local.get $start)))
      (br $forever))))
