;; log-tail: follows log.txt in its volume (written by log-writer in the pod's other container)
;; and copies what is appended to stdout, like `tail -f`. Waits for the file to appear.
;;
;; A WASI preview 1 command in the WebAssembly text format (see ticker.wat for why). The volume
;; is the container's only one, so it is the first preopened directory, fd 3.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)

  ;; Memory map: 0 iovecs, 64 one clock subscription, 128 its event, 192 counters and the
  ;; opened fd, 256 text, 1024..5120 the read buffer.
  (data (i32.const 256) "log.txt")
  (data (i32.const 272) "waiting for log.txt\n")

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
    (local $n i32)
    (i32.store (i32.const 0) (i32.const 272))
    (i32.store (i32.const 4) (i32.const 20))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 192)))
    ;; fd 3, follow symlinks, "log.txt", no oflags, read rights only (the volume may be mounted
    ;; read-only); the fd lands at 200.
    (loop $open
      (if (call $path_open (i32.const 3) (i32.const 1) (i32.const 256) (i32.const 7)
            (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 200))
        (then
          (call $sleep (i64.const 200000000))
          (br $open))))
    (local.set $fd (i32.load (i32.const 200)))
    (loop $follow
      (i32.store (i32.const 8) (i32.const 1024))
      (i32.store (i32.const 12) (i32.const 4096))
      (i32.store (i32.const 204) (i32.const 0))
      (drop (call $fd_read (local.get $fd) (i32.const 8) (i32.const 1) (i32.const 204)))
      (local.set $n (i32.load (i32.const 204)))
      (if (local.get $n)
        (then
          (i32.store (i32.const 0) (i32.const 1024))
          (i32.store (i32.const 4) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 192))))
        (else (call $sleep (i64.const 200000000))))
      (br $follow))))
