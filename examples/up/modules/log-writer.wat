;; log-writer: appends "line N" to log.txt in its volume once a second, forever, and says so on
;; stdout. Its partner, log-tail, follows the same file from the pod's other container.
;;
;; A WASI preview 1 command in the WebAssembly text format (see ticker.wat for why). The volume
;; is the container's only one, so it is the first preopened directory, fd 3.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)

  ;; Memory map: 0 iovecs, 64 one clock subscription, 128 its event, 192 counters and the
  ;; opened fd, 256 text, 400..544 the line being written.
  (data (i32.const 256) "log.txt")
  (data (i32.const 272) "line ")
  (data (i32.const 288) "wrote ")
  (data (i32.const 304) "cannot open log.txt in the volume (fd 3)\n")

  ;; Writes the len bytes at ptr to fd in one buffer (fd_write may write only the first), so a
  ;; line is never split.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 192))))

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
    (i32.store8 (i32.const 72) (i32.const 0))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (local.get $ns))
    (i64.store (i32.const 96) (i64.const 0))
    (i32.store16 (i32.const 104) (i32.const 0))
    (drop (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 196))))

  (func (export "_start")
    (local $fd i32)
    (local $n i64)
    (local $start i32)
    ;; fd 3, follow symlinks, "log.txt", O_CREAT, all rights, fdflags APPEND; the fd lands at 200.
    (if (call $path_open (i32.const 3) (i32.const 1) (i32.const 256) (i32.const 7)
          (i32.const 1) (i64.const 0x1FFFFFFF) (i64.const 0x1FFFFFFF) (i32.const 1) (i32.const 200))
      (then
        (call $write (i32.const 2) (i32.const 304) (i32.const 41))
        (call $proc_exit (i32.const 1))))
    (local.set $fd (i32.load (i32.const 200)))
    (loop $forever
      (local.set $n (i64.add (local.get $n) (i64.const 1)))
      ;; "line N" to the file, then "wrote line N" to stdout.
      (local.set $start (call $line (i32.const 272) (i32.const 5) (local.get $n)))
      (call $write (local.get $fd) (local.get $start) (i32.sub (i32.const 544) (local.get $start)))
      (local.set $start (i32.sub (local.get $start) (i32.const 6)))
      (memory.copy (local.get $start) (i32.const 288) (i32.const 6))
      (call $write (i32.const 1) (local.get $start) (i32.sub (i32.const 544) (local.get $start)))
      (call $sleep (i64.const 1000000000))
      (br $forever))))
