# Both binaries, static and non-root, for those who build with a daemon: docker build
# --target proxy --build-arg VERSION=v0.1.0 . The release images come from `task images`
# (hack/images: no daemon, no registry, reproducible; docs/install.md).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ENV CGO_ENABLED=0
RUN for b in operator proxy; do go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/tollgate-dev/tollgate/internal/version.version=${VERSION}" -o /out/$b ./$b; done

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/operator /operator
USER 65532:65532
ENTRYPOINT ["/operator"]

FROM gcr.io/distroless/static-debian12:nonroot AS proxy
COPY --from=build /out/proxy /proxy
USER 65532:65532
ENTRYPOINT ["/proxy"]
