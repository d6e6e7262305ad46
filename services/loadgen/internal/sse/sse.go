// Package sse is a light Server-Sent Events client for the benchmarks: thousands of
// dashboard viewers, each a plain keep-alive connection and a small buffer, reading
// frames and the pageview count each one shows.
package sse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Frame is one event of the stream.
type Frame struct {
	Event string
	Data  []byte
}

// StatusError is a stream request answered with a status other than 200.
type StatusError struct {
	Status int
	Body   string // the start of the answer's body
}

func (e *StatusError) Error() string { return fmt.Sprintf("stream status %d: %s", e.Status, e.Body) }

// Stream is an open event stream.
type Stream struct {
	conn net.Conn
	body *bufio.Reader
	line []byte
}

// Dial opens an event stream at http://addr+path (addr must be a loopback address, the
// caller's to check) and reads the response head; a status other than 200 is a
// *StatusError. Errors do not repeat path, which may hold a key.
func Dial(ctx context.Context, addr, path string, timeout time.Duration) (*Stream, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial stream: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send stream request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 2048)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read stream response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		conn.Close()
		return nil, &StatusError{Status: resp.StatusCode, Body: string(bytes.TrimSpace(b))}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		conn.Close()
		return nil, fmt.Errorf("stream content type %q", ct)
	}
	_ = conn.SetDeadline(time.Time{})
	return &Stream{conn: conn, body: bufio.NewReaderSize(resp.Body, 2048)}, nil
}

// SetReadDeadline bounds the next reads.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.conn.SetReadDeadline(t) }

// Close closes the connection.
func (s *Stream) Close() error { return s.conn.Close() }

// Next reads the next event; comments (heartbeats) and fields other than event and data
// are skipped. Data lines are joined with "\n".
func (s *Stream) Next() (Frame, error) { return readFrame(s.body, &s.line) }

// readFrame reads one event from r, using *buf for long lines.
func readFrame(r *bufio.Reader, buf *[]byte) (Frame, error) {
	var f Frame
	var data []byte
	hasData := false
	for {
		line, err := readLine(r, buf)
		if err != nil {
			return Frame{}, err
		}
		if len(line) == 0 {
			if hasData || f.Event != "" {
				f.Data = data
				if f.Event == "" {
					f.Event = "message"
				}
				return f, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			f.Event = string(value)
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
}

// readLine returns the next line without its end ("\n" or "\r\n"); it stays valid until
// the next call.
func readLine(r *bufio.Reader, buf *[]byte) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		*buf = append((*buf)[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = r.ReadSlice('\n')
			*buf = append(*buf, line...)
		}
		line = *buf
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

// Pageviews is the pageview count of a stats frame's summary: "summary":{"pageviews":N}
// or "summary":{...,"pageviews":{"value":N,...}}. It looks for the field instead of
// decoding the whole frame, so thousands of viewers can read the same frame cheaply.
func Pageviews(data []byte) (int64, bool) {
	_, rest, ok := bytes.Cut(data, []byte(`"summary":`))
	if !ok {
		return 0, false
	}
	_, rest, ok = bytes.Cut(rest, []byte(`"pageviews":`))
	if !ok {
		return 0, false
	}
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) > 0 && rest[0] == '{' {
		_, rest, ok = bytes.Cut(rest, []byte(`"value":`))
		if !ok {
			return 0, false
		}
		rest = bytes.TrimLeft(rest, " ")
	}
	end := 0
	for end < len(rest) && (rest[end] >= '0' && rest[end] <= '9' || rest[end] == '-') {
		end++
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
