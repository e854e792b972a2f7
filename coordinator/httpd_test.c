/* The dashboard's HTTP server on a real socket: documents, methods, paths,
 * hostile requests, event streams and their limit, clients that vanish,
 * and stopping with streams open. Every read has a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "common/clock/clock.h"
#include "coordinator/httpd.h"

#define WAIT_MS 5000

static const tg_httpd_doc docs[] = {
    {"/", "text/html; charset=utf-8", NULL},
    {"/api/v1/state", "application/json", "state"},
    {"/api/v1/faults", "application/json", "faults"},
};

static tg_httpd *start(int max_streams) {
  char err[256];
  tg_httpd_config cfg = {.listen = "127.0.0.1:0", .docs = docs, .n_docs = 3, .events_path = "/api/v1/events",
                         .max_streams = max_streams, .keepalive_ms = 200};
  tg_httpd *h = tg_httpd_start(&cfg, err, sizeof err);
  if (!h) fail_msg("start: %s", err);
  assert_true(tg_httpd_port(h) > 0);
  tg_httpd_publish(h, 0, "<html>page</html>", 17);
  tg_httpd_publish(h, 1, "{\"step\":1}", 10);
  tg_httpd_publish(h, 2, "{\"faults\":[]}", 13);
  return h;
}

static int connect_to(tg_httpd *h) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tg_httpd_port(h))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  struct timeval tv = {0, 100 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void send_all(int fd, const char *data, size_t len) {
  while (len) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n <= 0) return; /* the server may close on a hostile request */
    data += n;
    len -= (size_t)n;
  }
}

/* Reads into buf until `until` appears (NULL: until the server closes)
 * or the deadline; returns the bytes read. */
static size_t read_until(int fd, char *buf, size_t cap, const char *until) {
  size_t len = 0;
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  buf[0] = '\0';
  while (len + 1 < cap && tg_clock_mono_ms() < deadline) {
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n == 0) break;
    if (n < 0) continue; /* the receive timeout: look at the deadline */
    len += (size_t)n;
    buf[len] = '\0';
    if (until && strstr(buf, until)) break;
  }
  return len;
}

/* One request on a fresh connection; the whole answer into buf. */
static void request(tg_httpd *h, const char *req, char *buf, size_t cap) {
  int fd = connect_to(h);
  send_all(fd, req, strlen(req));
  read_until(fd, buf, cap, NULL);
  close(fd);
}

static void test_documents(void **state) {
  tg_httpd *h = start(4);
  char buf[4096];
  request(h, "GET /api/v1/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, "HTTP/1.1 200"));
  assert_non_null(strstr(buf, "Content-Type: application/json"));
  assert_non_null(strstr(buf, "{\"step\":1}"));
  tg_httpd_publish(h, 1, "{\"step\":2}", 10);
  request(h, "GET /api/v1/state HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, "{\"step\":2}"));
  request(h, "HEAD / HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, " 200 "));
  assert_null(strstr(buf, "page"));
  request(h, "GET / HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, "Content-Security-Policy"));
  assert_non_null(strstr(buf, "<html>page</html>"));
  tg_httpd_free(h);
}

/* A document not published yet is not an empty 200. */
static void test_unpublished(void **state) {
  char err[256], buf[4096];
  tg_httpd_config cfg = {.listen = "127.0.0.1:0", .docs = docs, .n_docs = 3, .events_path = "/api/v1/events"};
  tg_httpd *h = tg_httpd_start(&cfg, err, sizeof err);
  assert_non_null(h);
  request(h, "GET /api/v1/state HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, " 503 "));
  tg_httpd_publish(h, 1, "", 0);
  request(h, "GET /api/v1/state HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, " 200 "));
  tg_httpd_free(h);
}

static void test_refusals(void **state) {
  tg_httpd *h = start(4);
  char buf[4096];
  static const struct {
    const char *request, *expect;
  } refused[] = {
      {"GET /etc/passwd HTTP/1.0\r\n\r\n", " 404 "},
      {"GET /api/v1/state/ HTTP/1.0\r\n\r\n", " 404 "},
      {"GET /api/v1/state?x=1 HTTP/1.0\r\n\r\n", " 200 "}, /* a query string is ignored */
      {"POST /api/v1/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
       "Allow: GET, HEAD"},
      {"DELETE / HTTP/1.0\r\n\r\n", " 405 "},
      {"GARBAGE\r\n\r\n", NULL}, /* no answer, or an error */
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    request(h, refused[i].request, buf, sizeof buf);
    if (!refused[i].expect ? strstr(buf, " 200 ") != NULL : !strstr(buf, refused[i].expect))
      fail_msg("%s: expected %s, got %.200s", refused[i].request, refused[i].expect, buf);
  }

  /* Headers far beyond the per-connection limit: refused, nothing served. */
  size_t big = 256 << 10;
  char *huge = malloc(big + 64);
  assert_non_null(huge);
  int n = snprintf(huge, 64, "GET / HTTP/1.1\r\nX-Big: ");
  memset(huge + n, 'a', big);
  memcpy(huge + n + big, "\r\n\r\n", 5);
  request(h, huge, buf, sizeof buf);
  assert_null(strstr(buf, " 200 "));
  free(huge);

  /* Still serving. */
  request(h, "GET / HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, " 200 "));
  tg_httpd_free(h);
}

static int open_stream(tg_httpd *h) {
  int fd = connect_to(h);
  const char *req = "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
  send_all(fd, req, strlen(req));
  return fd;
}

static void test_event_stream(void **state) {
  tg_httpd *h = start(4);
  static char buf[65536];
  int fd = open_stream(h);
  read_until(fd, buf, sizeof buf, "{\"faults\":[]}");
  assert_non_null(strstr(buf, "Content-Type: text/event-stream"));
  assert_non_null(strstr(buf, "event: state\ndata: {\"step\":1}\n\n"));
  assert_non_null(strstr(buf, "{\"faults\":[]}"));

  /* A change is pushed; an unchanged publish is not. */
  tg_httpd_publish(h, 1, "{\"step\":1}", 10);
  tg_httpd_publish(h, 2, "{\"faults\":[{\"kind\":\"HANG\"}]}", 28);
  read_until(fd, buf, sizeof buf, "HANG\"}]}");
  assert_non_null(strstr(buf, "event: faults\ndata: {\"faults\":[{\"kind\":\"HANG\"}]}\n\n"));
  assert_null(strstr(buf, "event: state"));

  /* A document larger than one write buffer arrives whole. */
  size_t big = 200000;
  char *doc = malloc(big);
  assert_non_null(doc);
  memset(doc, 'x', big);
  doc[0] = '"';
  doc[big - 1] = '"';
  tg_httpd_publish(h, 1, doc, big);
  size_t got = 0;
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  while (got < big && tg_clock_mono_ms() < deadline) {
    size_t n = read_until(fd, buf, sizeof buf, "\"");
    for (size_t i = 0; i < n; i++) got += buf[i] == 'x';
  }
  assert_true(got >= big - 2);
  free(doc);

  /* Idle streams get keepalive comments. */
  read_until(fd, buf, sizeof buf, ": keepalive");
  assert_non_null(strstr(buf, ": keepalive"));
  close(fd);
  tg_httpd_free(h);
}

static void test_stream_limit_and_disconnects(void **state) {
  tg_httpd *h = start(2);
  char buf[8192];
  int a = open_stream(h), b = open_stream(h);
  read_until(a, buf, sizeof buf, "event: state");
  read_until(b, buf, sizeof buf, "event: state");
  request(h, "GET /api/v1/events HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, " 503 "));
  /* Plain requests are still served while streams hold their connections. */
  request(h, "GET /api/v1/state HTTP/1.0\r\n\r\n", buf, sizeof buf);
  assert_non_null(strstr(buf, " 200 "));

  /* A client that vanishes frees its place once the server writes to it. */
  close(a);
  int64_t deadline = tg_clock_mono_ms() + WAIT_MS;
  int c = -1;
  while (tg_clock_mono_ms() < deadline) {
    c = open_stream(h);
    read_until(c, buf, sizeof buf, "\r\n\r\n");
    if (strstr(buf, " 200 ")) break;
    close(c);
    c = -1;
    tg_httpd_publish(h, 1, buf, 8); /* something to write to the dead stream */
    usleep(50000);
  }
  assert_true(c >= 0);
  /* Stopping with streams open ends them. */
  tg_httpd_free(h);
  close(b);
  close(c);
}

static void test_bad_addresses(void **state) {
  char err[256];
  const char *bad[] = {"", "nohostport", "127.0.0.1:", "127.0.0.1:99999", "[::1:80", "no.such.host.invalid:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tg_httpd_config cfg = {.listen = bad[i], .docs = docs, .n_docs = 3, .events_path = "/e"};
    err[0] = '\0';
    assert_null(tg_httpd_start(&cfg, err, sizeof err));
    assert_true(err[0] != '\0');
  }
  /* A port in use. */
  tg_httpd *h = start(1);
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", tg_httpd_port(h));
  tg_httpd_config cfg = {.listen = addr, .docs = docs, .n_docs = 3, .events_path = "/e"};
  assert_null(tg_httpd_start(&cfg, err, sizeof err));
  tg_httpd_free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_documents),
      cmocka_unit_test(test_unpublished),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_event_stream),
      cmocka_unit_test(test_stream_limit_and_disconnects),
      cmocka_unit_test(test_bad_addresses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
