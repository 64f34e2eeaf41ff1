// Portraits' GraphiQL page (server/graphiql/page.html); React, ReactDOM, GraphiQL and its explorer plugin are
// loaded before this script, all served by this server (server/graphiql_assets.py).
//
// Queries and mutations are POSTed to this page's own URL with the Headers tab's headers. Subscriptions go over
// graphql-transport-ws (the graphql-ws client inside GraphiQL's build) to the same URL: GraphiQL's fetcher sends
// the Headers tab's headers as the connection_init payload, where the server reads "Authorization" (a browser
// cannot set headers on a websocket upgrade).
(function () {
  "use strict";

  var endpoint = window.location.origin + window.location.pathname;
  var parameters = new URLSearchParams(window.location.search);

  var DEFAULT_QUERY = [
    "# Portraits' GraphQL API.",
    "#",
    "# Put a bearer token in the Headers tab below (`make run` prints a development one):",
    '#   {"Authorization": "Bearer <token>"}',
    "# Ctrl-Enter runs the operation; subscriptions (jobChanged, characterImageChanged, portraitJobChanged)",
    "# stream their events into the result pane.",
    "",
    "query Me {",
    "  viewer { id }",
    "}",
    "",
  ].join("\n");

  // The query and variables (never the headers: they hold tokens) are kept in the address, to share a link.
  function keepInAddress(name) {
    return function (value) {
      var kept = new URLSearchParams(window.location.search);
      if (value) {
        kept.set(name, value);
      } else {
        kept.delete(name);
      }
      var search = kept.toString();
      window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
    };
  }

  var fetcher = GraphiQL.createFetcher({
    url: endpoint,
    subscriptionUrl: endpoint.replace(/^http/, "ws"),
  });

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: DEFAULT_QUERY,
      query: parameters.get("q") || undefined,
      variables: parameters.get("variables") || undefined,
      onEditQuery: keepInAddress("q"),
      onEditVariables: keepInAddress("variables"),
      plugins: [GraphiQLPluginExplorer.explorerPlugin()],
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      inputValueDeprecation: true,
    })
  );
})();
