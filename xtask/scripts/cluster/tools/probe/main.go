// Command probe is the local cluster's test image: a static program, run FROM scratch, that
// serves HTTP, fetches URLs and resolves names, so a test can check DNS, pod-to-pod traffic and
// NetworkPolicy enforcement without a shell in the image.
//
//	probe serve [ADDR]          serve "<hostname>\n" on ADDR (default :8080) until SIGTERM
//	probe get URL [TIMEOUT]     GET URL, print the body; exit 1 on any error (default timeout 3s)
//	probe resolve NAME          print NAME's addresses; exit 1 when it does not resolve
//	probe write FILE            write the hostname to FILE and read it back
//	probe sleep                 sleep until SIGTERM
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe serve [ADDR] | get URL [TIMEOUT] | resolve NAME | write FILE | sleep")
		os.Exit(2)
	}
	arg := func(i int, def string) string {
		if len(os.Args) > i {
			return os.Args[i]
		}
		return def
	}
	switch os.Args[1] {
	case "serve":
		host, _ := os.Hostname()
		srv := &http.Server{Addr: arg(2, ":8080"), ReadHeaderTimeout: 5 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, host) })}
		go func() { waitSignal(); _ = srv.Close() }()
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			fail(err)
		}
	case "get":
		timeout, err := time.ParseDuration(arg(3, "3s"))
		if err != nil {
			fail(err)
		}
		resp, err := (&http.Client{Timeout: timeout}).Get(arg(2, ""))
		if err != nil {
			fail(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Print(string(body))
		if resp.StatusCode >= 400 {
			fail(fmt.Errorf("status %s", resp.Status))
		}
	case "resolve":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, arg(2, ""))
		if err != nil {
			fail(err)
		}
		for _, a := range addrs {
			fmt.Println(a)
		}
	case "write":
		host, _ := os.Hostname()
		if err := os.WriteFile(arg(2, ""), []byte(host+"\n"), 0o644); err != nil {
			fail(err)
		}
		b, err := os.ReadFile(arg(2, ""))
		if err != nil {
			fail(err)
		}
		fmt.Print(string(b))
	case "sleep":
		waitSignal()
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func waitSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "probe:", err)
	os.Exit(1)
}
