package sse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReadFrame(t *testing.T) {
	long := strings.Repeat("x", 5000) // longer than the reader's buffer
	in := "retry: 2000\n\n: ping\n\nevent: stats\ndata: {\"a\":1}\n\r\n" +
		"data: line1\ndata: line2\nid: 7\n\n" +
		"event: stats\ndata:" + long + "\n\n" +
		"event: stats\ndata: cut"
	r := bufio.NewReaderSize(strings.NewReader(in), 64)
	var buf []byte
	want := []Frame{
		{Event: "stats", Data: []byte(`{"a":1}`)},
		{Event: "message", Data: []byte("line1\nline2")},
		{Event: "stats", Data: []byte(long)},
	}
	for i, w := range want {
		got, err := readFrame(r, &buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Fatalf("frame %d (-want +got):\n%s", i, diff)
		}
	}
	if _, err := readFrame(r, &buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut frame: err %v, want unexpected EOF", err)
	}
}

func TestPageviews(t *testing.T) {
	tests := []struct {
		name string
		data string
		want int64
		ok   bool
	}{
		{"flat summary", `{"site_id":1,"period":{"name":"today"},"summary":{"pageviews":42,"visitors":7}}`, 42, true},
		{"summary of metric objects", `{"site":{"id":1},"summary":{"visitors":{"value":3,"previous":0,"change":null},"pageviews":{"value": 1234,"previous":9}},"panels":{"page":[{"value":"/","pageviews":5}]}}`, 1234, true},
		{"panels before summary are ignored", `{"panels":{"page":[{"pageviews":5}]},"summary":{"pageviews":{"value":8}}}`, 8, true},
		{"no summary", `{"panels":{"page":[{"pageviews":5}]}}`, 0, false},
		{"no number", `{"summary":{"pageviews":"x"}}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Pageviews([]byte(tt.data))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("Pageviews = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestDialReadsChunkedStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("key") != "k" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(w, "event: stats\ndata: {\"summary\":{\"pageviews\":%d}}\n\n", i)
			fl.Flush()
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var se *StatusError
	if _, err := Dial(t.Context(), addr, "/live?key=bad", time.Second); !errors.As(err, &se) || se.Status != http.StatusUnauthorized || strings.Contains(err.Error(), "bad") {
		t.Fatalf("bad key: err %v, want status 401 without the key", err)
	}
	s, err := Dial(t.Context(), addr, "/live?key=k", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for want := int64(1); want <= 3; want++ {
		f, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := Pageviews(f.Data); !ok || n != want {
			t.Fatalf("frame %d shows %d, %v", want, n, ok)
		}
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: err %v, want EOF", err)
	}
}
