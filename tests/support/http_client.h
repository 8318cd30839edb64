// A minimal HTTP client for tests on loopback (no client library needed).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace switchyard::testing {

struct HttpResult {
  int status = 0;                              // 0 when the connection failed
  std::string body;                            // de-chunked when the reply was chunked
  std::map<std::string, std::string> headers;  // lower-case names
  std::string error;                           // why the connection failed (TLS), if it did
};

// One request, fully described.
struct HttpCall {
  std::string method = "GET";
  std::string path = "/";
  std::string content_type;
  std::string body;
  std::map<std::string, std::string> headers;  // extra request headers
  // HTTP/1.1 (with Connection: close) instead of HTTP/1.0, so the server may answer chunked.
  bool http11 = false;
  // Sent as Content-Length instead of body.size() (e.g. to announce a body over the limit).
  std::optional<size_t> content_length;
  // Called after every read with everything received so far (status line and headers included),
  // e.g. to time server-sent events.
  std::function<void(const std::string& received)> on_read;
  // HTTPS when set: the server's certificate must chain to this CA and name 127.0.0.1.
  std::string tls_ca_file;
  // A client certificate and its key (mutual TLS), with tls_ca_file.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// One request to 127.0.0.1:`port`; reads until the server closes (bounded by a 60 s timeout).
HttpResult HttpRequest(int port, const HttpCall& call);
HttpResult HttpRequest(int port, const std::string& method, const std::string& path,
                       const std::string& content_type = "", const std::string& body = "");

}  // namespace switchyard::testing
