package enforce

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// A body is buffered to be parsed. Its memory is taken from the bytes quota as it arrives,
// never in advance from Content-Length, so that a client announcing a large body and sending
// nothing holds nothing; and the whole body must arrive within the body read timeout, so that
// a client sending a byte now and then cannot hold a request open for long.

const (
	// firstChunk is the buffer a body starts in when its length is unknown or large.
	firstChunk = 4 << 10
)

// bodyError is why a body could not be read, as the response to send.
type bodyError struct {
	status int
	reason string // metrics label
	msg    string
}

var (
	errBodyTooLarge = &bodyError{http.StatusRequestEntityTooLarge, "body_too_large", "Request body too large"}
	errBodyTimeout  = &bodyError{http.StatusRequestTimeout, "body_timeout", "Request body not received in time"}
	errBodyCaller   = &bodyError{http.StatusTooManyRequests, "buffer_caller", "Too many request bytes in flight from this caller"}
	errBodyTotal    = &bodyError{http.StatusServiceUnavailable, "buffer_total", "Too many request bytes in flight"}
	errBodyRead     = &bodyError{http.StatusBadRequest, "body_read", "Request body could not be read"}
)

// held is what a body took from the bytes quota: n from its caller's share, of which total
// also from the proxy-wide total.
type held struct{ n, total int64 }

// readBody reads r's body, at most max bytes, within the body read timeout, taking its
// memory from the bytes quota for caller. It returns the body and what it took, which the
// caller gives back (h.bytes.release) when the request is done — also on error.
//
// The first chunk of every body is taken from the caller's share only: it is bounded by the
// connection cap (maxConnections × firstChunk), and an honest caller's small call is then
// never refused because others filled the proxy-wide total.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, caller string, max int64) ([]byte, held, *bodyError) {
	var took held
	if r.ContentLength > max {
		return nil, took, errBodyTooLarge
	}
	rc := http.NewResponseController(w)
	// Not every ResponseWriter supports deadlines (httptest's does not): then only the
	// server's own timeouts apply. The deadline is cleared only once the body is read: on
	// any error it stays, so that the server's own attempt to discard the rest of the body
	// (net/http reads up to 256 KiB of it) ends at once instead of waiting on a stalled client.
	deadline := rc.SetReadDeadline(h.opts.Now().Add(h.opts.BodyReadTimeout)) == nil
	size := int64(firstChunk)
	if r.ContentLength >= 0 && r.ContentLength < size {
		size = r.ContentLength + 1 // +1: EOF is seen without growing
	}
	take := func(n int64, total bool) *bodyError {
		var res quotaResult
		if total {
			res = h.bytes.acquire(caller, n)
		} else {
			res = h.bytes.acquireOwn(caller, n)
		}
		switch res {
		case quotaCaller:
			return errBodyCaller
		case quotaTotal:
			return errBodyTotal
		}
		took.n += n
		if total {
			took.total += n
		}
		return nil
	}
	if e := take(size, false); e != nil {
		return nil, took, e
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > max {
				return nil, took, errBodyTooLarge
			}
			grow := min(int64(cap(buf)), max+1-int64(cap(buf)))
			if e := take(grow, true); e != nil {
				return nil, took, e
			}
			next := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(next, buf)
			buf = next
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			return nil, took, errBodyTooLarge
		}
		switch {
		case err == io.EOF:
			if deadline {
				_ = rc.SetReadDeadline(time.Time{})
			}
			return buf, took, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, took, errBodyTimeout
		case err != nil:
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, took, errBodyTooLarge
			}
			return nil, took, errBodyRead
		}
	}
}

// deadlineBody bounds the reading of a body the proxy forwards unparsed (pass-through): the
// read deadline is set when the request arrives and cleared once the body is read, since a
// deadline left on the connection would cut a long response.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
