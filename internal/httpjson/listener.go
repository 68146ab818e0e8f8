package httpjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
)

// Listener wraps ln so that the few answers net/http's server writes itself,
// before any handler runs, are JSON like every other error: 431 (headers
// larger than MaxHeaderBytes), 400 (a malformed request line or header, a
// missing Host), 501 (an unknown transfer encoding). http.Server offers no
// hook for them; it writes each in one Write of a fixed shape, "HTTP/1.1
// <code> <reason>" + text/plain + "Connection: close" headers + a one-line
// body, straight to the connection, and that exact shape is what is
// rewritten. Everything else passes through untouched: the connection keeps
// ReadFrom (sendfile) and CloseWrite.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c}, nil
}

type conn struct{ net.Conn }

// serverErrorHeaders is net/http's errorHeaders (server.go).
const serverErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *conn) Write(p []byte) (int, error) {
	if out, ok := rewriteServerError(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the kernel copy (sendfile, splice) of the TCP connection.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// CloseWrite lets the server half-close after a 431, as it does unwrapped.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type writerOnly struct{ io.Writer }

// rewriteServerError turns net/http's own plain-text error answer into JSON.
func rewriteServerError(p []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	if !bytes.HasPrefix(p, []byte(proto)) {
		return nil, false
	}
	statusLine, body, ok := bytes.Cut(p[len(proto):], []byte(serverErrorHeaders))
	if !ok || bytes.ContainsAny(statusLine, "\r\n") || bytes.ContainsAny(body, "\r\n") || len(statusLine) < 4 || statusLine[3] != ' ' {
		return nil, false
	}
	code, err := strconv.Atoi(string(statusLine[:3]))
	if err != nil || code < 400 || code > 599 {
		return nil, false
	}
	msg, _ := json.Marshal(Error{Error: string(body) + " (answered by the HTTP server before the request was read)"})
	msg = append(msg, '\n')
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%s\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", proto, statusLine, len(msg))
	b.Write(msg)
	return b.Bytes(), true
}
