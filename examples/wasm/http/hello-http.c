// An HTTP function: a `wasi:http/proxy` component that answers every request with a greeting
// naming the method and path. Each request runs in a fresh instance.
//
// /crash traps (the request fails, the next one is served by a fresh instance);
// /hog grows its memory until the container's memory limit stops it.
//
// Built by ../build.sh: `wit-bindgen c` generates proxy.{c,h} and the component type from the
// WASI HTTP WIT files, clang compiles it as a reactor, and the preview 1 proxy adapter turns the
// module into a component.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

static const char *method_name(wasi_http_types_method_t *m) {
  switch (m->tag) {
  case WASI_HTTP_TYPES_METHOD_GET: return "GET";
  case WASI_HTTP_TYPES_METHOD_HEAD: return "HEAD";
  case WASI_HTTP_TYPES_METHOD_POST: return "POST";
  case WASI_HTTP_TYPES_METHOD_PUT: return "PUT";
  case WASI_HTTP_TYPES_METHOD_DELETE: return "DELETE";
  case WASI_HTTP_TYPES_METHOD_PATCH: return "PATCH";
  case WASI_HTTP_TYPES_METHOD_OPTIONS: return "OPTIONS";
  default: return "OTHER";
  }
}

static void respond(exports_wasi_http_incoming_handler_own_response_outparam_t out, uint16_t status,
                    const char *body) {
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
  proxy_list_u8_t bytes = {(uint8_t *)body, strlen(body)};
  wasi_io_streams_stream_error_t stream_error;
  wasi_io_streams_method_output_stream_blocking_write_and_flush(
      wasi_io_streams_borrow_output_stream(stream), &bytes, &stream_error);
  wasi_io_streams_output_stream_drop_own(stream);
  wasi_http_types_error_code_t body_error;
  wasi_http_types_static_outgoing_body_finish(body_handle, NULL, &body_error);
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t request,
    exports_wasi_http_incoming_handler_own_response_outparam_t out) {
  wasi_http_types_borrow_incoming_request_t req = wasi_http_types_borrow_incoming_request(request);
  wasi_http_types_method_t method;
  wasi_http_types_method_incoming_request_method(req, &method);
  proxy_string_t path;
  if (!wasi_http_types_method_incoming_request_path_with_query(req, &path)) {
    proxy_string_set(&path, "/");
  }
  char text[512];
  snprintf(text, sizeof text, "%.*s", (int)path.len, (const char *)path.ptr);
  proxy_string_free(&path);
  wasi_http_types_incoming_request_drop_own(request);

  if (strcmp(text, "/crash") == 0) {
    fprintf(stderr, "crashing on purpose\n");
    abort();
  }
  if (strcmp(text, "/hog") == 0) {
    // Grow linear memory a MiB at a time and touch it, until the host says no.
    for (;;) {
      size_t page = __builtin_wasm_memory_grow(0, 16);
      if (page == (size_t)-1) {
        break;
      }
      memset((char *)(page * 65536), 1, 1 << 20);
    }
    respond(out, 500, "memory exhausted\n");
    return;
  }

  char body[640];
  snprintf(body, sizeof body, "Hello from a Wasm function! You asked for %s %s\n",
           method_name(&method), text);
  printf("%s %s\n", method_name(&method), text);
  fflush(stdout);
  respond(out, 200, body);
}
