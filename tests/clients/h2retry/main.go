// h2retry: an HTTP/2 (h2c, prior knowledge) load client that does what browsers and Go's
// HTTP/2 client do at a GOAWAY: a request on a stream the server did not process (id above
// the GOAWAY's last-stream-id, or REFUSED_STREAM) is retried on a new connection (RFC 9113
// §6.8). That is golang.org/x/net/http2's Transport, unchanged; this program only counts.
//
// h2load cannot measure a handoff: it ends a client at its first GOAWAY and counts what the
// client had left as failed.
//
//	h2retry -url http://127.0.0.1:8080/ -conns 8 -workers 64 [-duration 10s]
//	h2retry -url https://127.0.0.1:8443/ -cacert ca.pem ...   (h2 over TLS, ALPN h2)
//	h2retry -http1 -url http://127.0.0.1:8000/ ...   (HTTP/1.1 with keep-alive: Go's
//	                                                  net/http Transport, unchanged)
//
// It runs until -duration passes, or until SIGINT/SIGTERM or stdin closes (when -duration is
// 0), then prints one JSON line on stdout (progress lines go to stderr every 200 ms): ok, failed, retried (requests that needed more than one
// connection), dials (connections opened), pids (distinct X-Heird-Pid values), errors (a few).
//
// Build (Debian: golang-go, golang-golang-x-net-dev; offline):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o h2retry main.go
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

type summary struct {
	OK      int64    `json:"ok"`
	Failed  int64    `json:"failed"`
	Retried int64    `json:"retried"`
	Dials   int64    `json:"dials"`
	Pids    []string `json:"pids"`
	Errors  []string `json:"errors"`
	Seconds float64  `json:"seconds"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/", "URL to GET (http://, h2c)")
	conns := flag.Int("conns", 4, "transports (each keeps its own connection)")
	workers := flag.Int("workers", 32, "concurrent requests in all (spread over the transports)")
	duration := flag.Duration("duration", 0, "run this long (0: until SIGINT/SIGTERM or stdin closes)")
	cacert := flag.String("cacert", "", "PEM file of the CA to trust, for an https:// URL")
	http1 := flag.Bool("http1", false, "HTTP/1.1 with keep-alive (net/http's own Transport, which retries an idempotent request whose reused connection closed before any answer) instead of h2c")
	flag.Parse()

	var tlsConfig *tls.Config
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "no certificate in", *cacert)
			os.Exit(2)
		}
		tlsConfig = &tls.Config{RootCAs: pool}
	}

	var dials, ok, failed, retried int64
	var mu sync.Mutex
	pids := map[string]bool{}
	var errs []string

	transports := make([]http.RoundTripper, *conns)
	for i := range transports {
		if *http1 {
			// Each transport keeps up to workers/conns idle keep-alive connections.
			var d net.Dialer
			transports[i] = &http.Transport{
				TLSClientConfig:     tlsConfig,
				MaxIdleConnsPerHost: *workers/(*conns) + 1,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					atomic.AddInt64(&dials, 1)
					return d.DialContext(ctx, network, addr)
				},
			}
			continue
		}
		transports[i] = &http2.Transport{
			AllowHTTP:       true,
			TLSClientConfig: tlsConfig,
			DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
				atomic.AddInt64(&dials, 1)
				if tlsConfig == nil {
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}
				// https: the Transport's config (ALPN h2 added), and h2 must be what was agreed.
				d := tls.Dialer{Config: cfg}
				c, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				if p := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
					c.Close()
					return nil, fmt.Errorf("ALPN agreed on %q, not h2", p)
				}
				return c, nil
			},
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	if *duration > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), *duration)
	} else {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
	}()

	// Progress on stderr, for a caller that waits for the load to warm up.
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			fmt.Fprintf(os.Stderr, "progress ok=%d failed=%d\n", atomic.LoadInt64(&ok), atomic.LoadInt64(&failed))
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		client := &http.Client{Transport: transports[w%len(transports)], Timeout: 30 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				gotConns := 0
				trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConns++ }}
				// The request is not tied to ctx: one in flight when we stop finishes.
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", *url, nil)
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if gotConns > 1 {
					atomic.AddInt64(&retried, 1)
				}
				if err != nil {
					atomic.AddInt64(&failed, 1)
					mu.Lock()
					if len(errs) < 10 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
					continue
				}
				atomic.AddInt64(&ok, 1)
				if pid := resp.Header.Get("X-Heird-Pid"); pid != "" {
					mu.Lock()
					pids[pid] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	s := summary{OK: ok, Failed: failed, Retried: retried, Dials: dials, Errors: errs,
		Seconds: time.Since(start).Seconds(), Pids: []string{}}
	for p := range pids {
		s.Pids = append(s.Pids, p)
	}
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
}
