// An HTTP function that calls another: `GET /?url=http://web/hello` makes an outgoing
// `wasi:http` request to that URL and answers with what came back (its status and body), or
// with 502 and the `wasi:http` error code when the request failed (`error: DNS-error`,
// `error: HTTP-request-denied`, ...). On Skiff the URL may name a Service (`web`,
// `web.default`, `web.default.svc.cluster.local`, a ClusterIP) or a host outside the cluster.
//
// Built by ../build.sh like hello-http.c: `wit-bindgen c` bindings for the wasi:http/proxy
// world, clang as a reactor, and the preview 1 proxy adapter makes it a component.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define MAX_BODY 65536

static const char *error_names[] = {
    "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
    "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
    "connection-terminated", "connection-timeout", "connection-read-timeout",
    "connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
    "TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
    "HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
    "HTTP-request-header-size", "HTTP-request-trailer-section-size",
    "HTTP-request-trailer-size", "HTTP-response-incomplete", "HTTP-response-header-section-size",
    "HTTP-response-header-size", "HTTP-response-body-size", "HTTP-response-trailer-section-size",
    "HTTP-response-trailer-size", "HTTP-response-transfer-coding",
    "HTTP-response-content-coding", "HTTP-response-timeout", "HTTP-upgrade-failed",
    "HTTP-protocol-error", "loop-detected", "configuration-error", "internal-error",
};

static void respond(exports_wasi_http_incoming_handler_own_response_outparam_t out,
                    uint16_t status, const char *body, size_t len) {
  wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
  wasi_http_types_field_name_t name;
  proxy_string_set(&name, "content-type");
  wasi_http_types_field_value_t value = {(uint8_t *)"text/plain", strlen("text/plain")};
  wasi_http_types_header_error_t header_error;
  wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(headers), &name, &value,
                                       &header_error);
  wasi_http_types_own_outgoing_response_t response =
      wasi_http_types_constructor_outgoing_response(headers);
  wasi_http_types_borrow_outgoing_response_t borrowed =
      wasi_http_types_borrow_outgoing_response(response);
  wasi_http_types_method_outgoing_response_set_status_code(borrowed, status);
  wasi_http_types_own_outgoing_body_t body_handle;
  wasi_http_types_method_outgoing_response_body(borrowed, &body_handle);

  wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false};
  result.val.ok = response;
  wasi_http_types_static_response_outparam_set(out, &result);

  wasi_http_types_own_output_stream_t stream;
  wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body_handle),
                                             &stream);
  // blocking-write-and-flush takes at most 4096 bytes at a time.
  for (size_t done = 0; done < len;) {
    size_t n = len - done > 4096 ? 4096 : len - done;
    proxy_list_u8_t bytes = {(uint8_t *)body + done, n};
    wasi_io_streams_stream_error_t stream_error;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &bytes, &stream_error)) {
      break;
    }
    done += n;
  }
  wasi_io_streams_output_stream_drop_own(stream);
  wasi_http_types_error_code_t body_error;
  wasi_http_types_static_outgoing_body_finish(body_handle, NULL, &body_error);
}

static void fail(exports_wasi_http_incoming_handler_own_response_outparam_t out,
                 wasi_http_types_error_code_t *code) {
  char text[512];
  const char *name = code->tag < sizeof error_names / sizeof *error_names
                         ? error_names[code->tag]
                         : "unknown";
  int n = snprintf(text, sizeof text, "error: %s", name);
  if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_DNS_ERROR && code->val.dns_error.rcode.is_some) {
    n += snprintf(text + n, sizeof text - n, " (%.*s)", (int)code->val.dns_error.rcode.val.len,
                  (const char *)code->val.dns_error.rcode.val.ptr);
  }
  if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR && code->val.internal_error.is_some) {
    n += snprintf(text + n, sizeof text - n, ": %.*s", (int)code->val.internal_error.val.len,
                  (const char *)code->val.internal_error.val.ptr);
  }
  snprintf(text + n, sizeof text - n, "\n");
  fprintf(stderr, "%s", text);
  respond(out, 502, text, strlen(text));
}

// Decodes %XX escapes in place.
static void percent_decode(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (r[0] == '%' && r[1] && r[2]) {
      char hex[3] = {r[1], r[2], 0};
      *w++ = (char)strtol(hex, NULL, 16);
      r += 2;
    } else {
      *w++ = *r;
    }
  }
  *w = 0;
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t out) {
  proxy_string_t path;
  char target[2048] = "";
  if (wasi_http_types_method_incoming_request_path_with_query(
          wasi_http_types_borrow_incoming_request(request), &path)) {
    char text[2048];
    snprintf(text, sizeof text, "%.*s", (int)path.len, (const char *)path.ptr);
    proxy_string_free(&path);
    char *url = strstr(text, "url=");
    if (url) {
      url += 4;
      char *end = strchr(url, '&');
      if (end) *end = 0;
      snprintf(target, sizeof target, "%s", url);
      percent_decode(target);
    }
  }
  wasi_http_types_incoming_request_drop_own(request);
  if (!*target) {
    const char *usage = "usage: GET /?url=http://SERVICE[:PORT]/PATH\n";
    respond(out, 400, usage, strlen(usage));
    return;
  }

  // scheme://authority/path?query
  wasi_http_types_scheme_t scheme = {.tag = WASI_HTTP_TYPES_SCHEME_HTTP};
  char *rest = target;
  if (strncmp(rest, "https://", 8) == 0) {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
    rest += 8;
  } else if (strncmp(rest, "http://", 7) == 0) {
    rest += 7;
  }
  char authority[512];
  char *slash = strchr(rest, '/');
  size_t authority_len = slash ? (size_t)(slash - rest) : strlen(rest);
  snprintf(authority, sizeof authority, "%.*s", (int)authority_len, rest);
  const char *path_with_query = slash ? slash : "/";
  printf("GET %s\n", target);
  fflush(stdout);

  wasi_http_types_own_outgoing_request_t outgoing =
      wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
  wasi_http_types_borrow_outgoing_request_t borrowed =
      wasi_http_types_borrow_outgoing_request(outgoing);
  wasi_http_types_method_outgoing_request_set_scheme(borrowed, &scheme);
  proxy_string_t value;
  proxy_string_set(&value, authority);
  wasi_http_types_method_outgoing_request_set_authority(borrowed, &value);
  proxy_string_set(&value, path_with_query);
  wasi_http_types_method_outgoing_request_set_path_with_query(borrowed, &value);

  wasi_http_types_own_future_incoming_response_t future;
  wasi_http_types_error_code_t code;
  if (!wasi_http_outgoing_handler_handle(outgoing, NULL, &future, &code)) {
    fail(out, &code);
    return;
  }
  wasi_http_types_borrow_future_incoming_response_t borrowed_future =
      wasi_http_types_borrow_future_incoming_response(future);
  wasi_http_types_own_pollable_t ready =
      wasi_http_types_method_future_incoming_response_subscribe(borrowed_future);
  wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
  wasi_io_poll_pollable_drop_own(ready);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
  wasi_http_types_method_future_incoming_response_get(borrowed_future, &got);
  wasi_http_types_future_incoming_response_drop_own(future);
  if (got.is_err) {
    const char *taken = "error: the response was already taken\n";
    respond(out, 502, taken, strlen(taken));
    return;
  }
  if (got.val.ok.is_err) {
    fail(out, &got.val.ok.val.err);
    return;
  }
  wasi_http_types_own_incoming_response_t response = got.val.ok.val.ok;
  wasi_http_types_borrow_incoming_response_t borrowed_response =
      wasi_http_types_borrow_incoming_response(response);
  uint16_t status = wasi_http_types_method_incoming_response_status(borrowed_response);

  static char body[MAX_BODY];
  size_t len = 0;
  wasi_http_types_own_incoming_body_t incoming_body;
  if (wasi_http_types_method_incoming_response_consume(borrowed_response, &incoming_body)) {
    wasi_http_types_own_input_stream_t stream;
    if (wasi_http_types_method_incoming_body_stream(
            wasi_http_types_borrow_incoming_body(incoming_body), &stream)) {
      for (;;) {
        proxy_list_u8_t chunk;
        wasi_io_streams_stream_error_t stream_error;
        if (!wasi_io_streams_method_input_stream_blocking_read(
                wasi_io_streams_borrow_input_stream(stream), 4096, &chunk, &stream_error)) {
          break;
        }
        size_t n = chunk.len < MAX_BODY - len ? chunk.len : MAX_BODY - len;
        memcpy(body + len, chunk.ptr, n);
        len += n;
        proxy_list_u8_free(&chunk);
      }
      wasi_io_streams_input_stream_drop_own(stream);
    }
    wasi_http_types_incoming_body_drop_own(incoming_body);
  }
  wasi_http_types_incoming_response_drop_own(response);
  respond(out, status, body, len);
}
