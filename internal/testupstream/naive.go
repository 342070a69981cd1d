package testupstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds of the naive upstream.
const (
	naiveMaxHeaderBytes = 16 << 10
	naiveMaxBodyBytes   = 1 << 20
	naiveMaxRequests    = 100 // per connection
	naiveReadTimeout    = 5 * time.Second
	naiveWriteTimeout   = 5 * time.Second
)

// KeyMalformed counts what the naive upstream could not parse as a request (after which it
// answers 400 and closes the connection).
const KeyMalformed = "!malformed"

// StartNaive starts a plain HTTP/1.1 server on 127.0.0.1 with its own minimal parser, naive
// about bodies as many simple servers are: it reads a body only for POST, PUT and PATCH (by
// Content-Length, or chunked), and never for GET, HEAD, DELETE or OPTIONS, whose body bytes it
// therefore parses as the next request on the keep-alive connection. So a HEAD whose body is
// a whole second request gets that second request executed (request smuggling); tests use
// it to prove the proxy never forwards such a body. It counts each request it parsed by
// "METHOD TARGET" (the request target as sent, e.g. "POST /x") and answers 200 with a small
// JSON body (none for HEAD). It stops when the test ends.
func StartNaive(t testing.TB) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening on 127.0.0.1: %v", err)
	}
	n := &naive{ln: ln, c: newCounter(), conns: map[net.Conn]struct{}{}}
	n.wg.Add(1)
	go n.serve()
	t.Cleanup(n.close)
	return inProcess("http://"+ln.Addr().String(), n.c)
}

type naive struct {
	ln net.Listener
	c  *counter
	wg sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (n *naive) serve() {
	defer n.wg.Done()
	for {
		conn, err := n.ln.Accept()
		if err != nil {
			return // closed
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			_ = conn.Close()
			return
		}
		n.conns[conn] = struct{}{}
		n.wg.Add(1)
		n.mu.Unlock()
		go func() {
			defer n.wg.Done()
			n.serveConn(conn)
			n.mu.Lock()
			delete(n.conns, conn)
			n.mu.Unlock()
			_ = conn.Close()
		}()
	}
}

func (n *naive) close() {
	n.mu.Lock()
	n.closed = true
	_ = n.ln.Close()
	for c := range n.conns {
		_ = c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// naiveRequest is what the parser keeps of a request.
type naiveRequest struct {
	method, target string
	contentLength  int64 // -1: none
	chunked, close bool
}

func (n *naive) serveConn(conn net.Conn) {
	br := bufio.NewReaderSize(conn, 4096)
	for i := 1; i <= naiveMaxRequests; i++ {
		_ = conn.SetReadDeadline(time.Now().Add(naiveReadTimeout))
		req, err := readNaiveRequest(br)
		if errors.Is(err, io.EOF) {
			return // no request began
		}
		if err != nil {
			n.c.add(KeyMalformed)
			n.respond(conn, "", http.StatusBadRequest, true)
			return
		}
		n.c.add(req.method + " " + req.target)
		if err := skipBody(br, req); err != nil {
			return
		}
		last := req.close || i == naiveMaxRequests
		if !n.respond(conn, req.method, http.StatusOK, last) || last {
			return
		}
	}
}

// readNaiveRequest parses a request line and headers, at most naiveMaxHeaderBytes in all.
// It returns io.EOF when the connection ended (closed, timed out) before a request began.
func readNaiveRequest(br *bufio.Reader) (naiveRequest, error) {
	req := naiveRequest{contentLength: -1}
	budget := naiveMaxHeaderBytes
	readLine := func() (string, error) {
		line, err := br.ReadSlice('\n')
		if budget -= len(line); budget < 0 {
			return "", errors.New("header too large")
		}
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(line), "\r\n"), nil
	}
	line, err := readLine()
	if err != nil {
		if budget == naiveMaxHeaderBytes {
			return req, io.EOF // closed or timed out while idle: no request began
		}
		return req, fmt.Errorf("request line: %w", err)
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return req, fmt.Errorf("bad request line %q", line)
	}
	req.method, req.target = parts[0], parts[1]
	req.close = parts[2] == "HTTP/1.0"
	for {
		line, err := readLine()
		if err != nil {
			return req, fmt.Errorf("header: %w", err)
		}
		if line == "" {
			return req, nil
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return req, fmt.Errorf("bad header line %q", line)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			if req.contentLength, err = strconv.ParseInt(value, 10, 64); err != nil || req.contentLength < 0 {
				return req, fmt.Errorf("bad Content-Length %q", value)
			}
		case "transfer-encoding":
			req.chunked = strings.EqualFold(value, "chunked")
		case "connection":
			req.close = strings.EqualFold(value, "close")
		}
	}
}

// skipBody reads the body of a POST, PUT or PATCH, and nothing for any other method: the
// naivety this upstream exists for.
func skipBody(br *bufio.Reader, req naiveRequest) error {
	switch req.method {
	case "POST", "PUT", "PATCH":
	default:
		return nil
	}
	if req.chunked {
		if _, err := io.Copy(io.Discard, io.LimitReader(httputil.NewChunkedReader(br), naiveMaxBodyBytes)); err != nil {
			return err
		}
		// Trailers, then the empty line that ends the message.
		for range 64 {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				return nil
			}
		}
		return errors.New("too many trailers")
	}
	if req.contentLength > naiveMaxBodyBytes {
		return errors.New("body too large")
	}
	_, err := io.CopyN(io.Discard, br, max(req.contentLength, 0))
	return err
}

// respond writes a status with a small JSON body (none for HEAD) and reports success.
func (n *naive) respond(conn net.Conn, method string, status int, closing bool) bool {
	body := `{"upstream":"naive"}`
	if status != http.StatusOK {
		body = `{"error":"malformed request"}`
	}
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", status, http.StatusText(status), len(body))
	if closing {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	if method != "HEAD" {
		b.WriteString(body)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(naiveWriteTimeout))
	_, err := io.WriteString(conn, b.String())
	return err == nil
}
