// Swagger UI from the package's own assets; console sessions send their CSRF token.
"use strict";
window.addEventListener("load", () => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    requestInterceptor: (request) => {
      if (meta) request.headers["X-CSRF-Token"] = meta.content;
      return request;
    },
  });
});
