# Both binaries, static and non-root. Build one with --target operator or --target proxy.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags="-s -w" -o /out/operator ./operator && \
    go build -trimpath -ldflags="-s -w" -o /out/proxy ./proxy

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/operator /operator
USER 65532:65532
ENTRYPOINT ["/operator"]

FROM gcr.io/distroless/static-debian12:nonroot AS proxy
COPY --from=build /out/proxy /proxy
USER 65532:65532
ENTRYPOINT ["/proxy"]
