// Point requirejs at the widget manager served next to this file (_static/wp/widgets/),
// so embed-amd.js finds its modules and fonts locally, and never asks a CDN for a module
// it does not hold: a third-party widget fails locally instead of loading from the web.
(function () {
  var here = document.currentScript.src.replace(/[^\/]*$/, "");
  var dist = here + "widgets";
  var paths = { "@jupyter-widgets/html-manager/dist": dist };
  ["base", "controls", "base7", "controls7", "html-manager"].forEach(function (name) {
    paths["@jupyter-widgets/" + name] = dist + "/embed-amd";
  });
  window.require.config({ paths: paths });
  // embed-amd.js reads its CDN from script[data-jupyter-widgets-cdn]; the last one wins.
  var marker = document.createElement("script");
  marker.type = "text/plain";
  marker.setAttribute("data-jupyter-widgets-cdn", here + "widgets-cdn/");
  marker.setAttribute("data-jupyter-widgets-cdn-only", "");
  document.head.appendChild(marker);
})();

// The widget manager typesets labels with MathJax 2's API (MathJax.Hub.Queue); the book loads
// MathJax 3. Once MathJax 3 has replaced its config object (deferred scripts have run by
// DOMContentLoaded; widgets render at "load"), give it a Hub.Queue that typesets the element.
document.addEventListener("DOMContentLoaded", function () {
  var MJ = window.MathJax;
  if (!MJ || MJ.Hub || !MJ.startup) return;
  MJ.Hub = {
    Queue: function (job) {
      var el = job && job[2];
      MJ.startup.promise = MJ.startup.promise
        .then(function () { return MJ.typesetPromise(el ? [el] : undefined); })
        .catch(function (err) { console.warn("MathJax typeset of a widget label:", err); });
    },
  };
});
