/* placeholder, replaced below */
window.capeBuildDiagnosePanel = function (panel) { panel.textContent = "diagnose: not yet"; };
