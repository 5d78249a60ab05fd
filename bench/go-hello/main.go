// go-hello: the optional Go net/http baseline of bench/run.sh (`--go`): `GET /` answers
// "Hello World". Usage: go-hello ADDR
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	addr := "127.0.0.1:8091"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("Hello World"))
	})
	log.Fatal(http.ListenAndServe(addr, nil))
}
