// Starts Swagger UI on /docs (newsletter/web/docs.py). A file, not an inline script: the page's
// CSP runs scripts from the app only. The settings are FastAPI's own for its /docs page, with no
// online validator (it would send the schema to another site).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: "none",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
  });
})();
